// Child process: the zero-latency fake vendor upstreams (OpenAI and Anthropic wire formats, from
// test/support), in a process of their own so their CPU is not the harness's nor the driver's.
// Talks to the harness over IPC.
import { startFakeAnthropic, startFakeOpenAI, type ScriptedReply } from '@elexirion/testing';

const openai = await startFakeOpenAI();
const anthropic = await startFakeAnthropic();
const fakes = [openai, anthropic];

interface Command {
  id: number;
  cmd: 'setDefault' | 'clear' | 'stats';
  reply?: ScriptedReply;
}

/** Most requests open at once, from each recorded request's receive and finish times. */
function maxConcurrent(): { count: number; maxConcurrent: number; open: number } {
  const events: Array<[number, number]> = [];
  let count = 0;
  let open = 0;
  for (const fake of fakes) {
    for (const request of fake.requests) {
      count++;
      events.push([request.receivedAt, 1]);
      if (request.finishedAt !== undefined) events.push([request.finishedAt, -1]);
      else open++;
    }
  }
  // Finishes before starts at the same millisecond: do not over-count.
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let current = 0;
  let max = 0;
  for (const [, delta] of events) {
    current += delta;
    if (current > max) max = current;
  }
  return { count, maxConcurrent: max, open };
}

process.on('message', (message: Command) => {
  let result: unknown = true;
  if (message.cmd === 'setDefault') for (const fake of fakes) fake.setDefault(message.reply ?? {});
  // Keeps the scripted default; only drops the recorded requests (they would grow for ever).
  if (message.cmd === 'clear') for (const fake of fakes) fake.requests.length = 0;
  if (message.cmd === 'stats') result = maxConcurrent();
  process.send!({ id: message.id, result });
});
process.on('disconnect', () => {
  void Promise.all(fakes.map((fake) => fake.close())).finally(() => process.exit(0));
});

process.send!({ ready: true, openaiUrl: openai.url, anthropicUrl: anthropic.url });
