import { proto } from '@elexirion/kit';
import { InvalidOutputError } from '../failure-class.js';
import type { StepHandler } from '../step-context.js';
import { addUsage } from '../usage.js';
import { llmCallOptions } from './llm.js';

/** JSON that matches the step's schema; one repair round trip, with the error, when the first answer does not. */
export const runGeminiStructured: StepHandler<'gemini_structured'> = async (step, context) => {
  const options = { ...llmCallOptions(step, context), jsonSchema: JSON.stringify(step.schema) };
  const first = await context.llm.call(options);
  const firstJson = first.structured!;
  if (!firstJson.error) return { ...first, output: firstJson.json, json: JSON.parse(firstJson.json) };
  if (!step.repair) throw new InvalidOutputError(`invalid_output: ${firstJson.error}`);
  const repaired = await context.llm.call({
    ...options,
    extraMessages: [
      { role: proto.Role.ROLE_ASSISTANT, content: first.output },
      { role: proto.Role.ROLE_USER, content: `That answer is not usable: ${firstJson.error}. Reply again with only JSON that matches the schema.` },
    ],
  });
  const repairedJson = repaired.structured!;
  if (repairedJson.error) throw new InvalidOutputError(`invalid_output after one repair: ${repairedJson.error}`);
  return { ...repaired, output: repairedJson.json, json: JSON.parse(repairedJson.json), usage: addUsage(first.usage, repaired.usage), attempts: first.attempts + repaired.attempts };
};
