export type { FakeUpstream, FakeUpstreamOptions, RecordedRequest, ScriptedReply, Vendor } from './common.js';
export { startFakeAnthropic } from './anthropic.js';
export { startFakeGemini } from './gemini.js';
export { startFakeOpenAI } from './openai.js';
