/** Substitutes `{{inputs.x}}` and `{{steps.<name>.output}}`; anything else, or anything missing, is an error. */
export class TemplateError extends Error {
  override readonly name = 'TemplateError';
}

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;

export interface TemplateScope {
  inputs: Record<string, string>;
  steps: Record<string, { output: string }>;
}

export function renderTemplate(template: string, scope: TemplateScope, where: string): string {
  return template.replace(PLACEHOLDER, (_match, reference: string) => {
    const parts = reference.split('.');
    if (parts[0] === 'inputs' && parts.length === 2) {
      const value = scope.inputs[parts[1]!];
      if (value === undefined) throw new TemplateError(`${where}: {{${reference}}} names input "${parts[1]}", which was not given`);
      return value;
    }
    if (parts[0] === 'steps' && parts.length === 3 && parts[2] === 'output') {
      const step = scope.steps[parts[1]!];
      if (!step) throw new TemplateError(`${where}: {{${reference}}} names step "${parts[1]}", which has not run before this one`);
      return step.output;
    }
    throw new TemplateError(`${where}: {{${reference}}} is not a known reference (use inputs.<name> or steps.<name>.output)`);
  });
}
