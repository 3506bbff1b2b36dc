import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import Anthropic from '@anthropic-ai/sdk';
import { ApiError, GoogleGenAI } from '@google/genai';
import OpenAI from 'openai';
import { gate, startFakeAnthropic, startFakeGemini, startFakeOpenAI, waitFor, type FakeUpstream } from '@elexirion/testing';

const API_KEY = 'test-key';

/** Resolves once the fake has seen `count` requests (the SDK call is in flight on the server side). */
async function requestsArrived(fake: FakeUpstream, count = 1): Promise<void> {
  await waitFor(`${count} requests at the ${fake.vendor} fake`, () => fake.requests.length >= count);
}

/** A fetch response's JSON body, loosely typed for digging into vendor payloads. */
const jsonOf = (response: Response): Promise<any> => response.json();

/** Drains an async iterable, returning what arrived before it ended or threw. */
async function drain<T>(iterable: AsyncIterable<T>): Promise<{ items: T[]; error?: unknown }> {
  const items: T[] = [];
  try {
    for await (const item of iterable) items.push(item);
    return { items };
  } catch (error) {
    return { items, error };
  }
}

describe('fake Anthropic upstream with the real SDK', () => {
  let fake: FakeUpstream;
  let client: Anthropic;
  const params = { model: 'claude-fake-1', max_tokens: 64, messages: [{ role: 'user' as const, content: 'hello claude' }] };

  beforeAll(async () => {
    fake = await startFakeAnthropic({ apiKey: API_KEY });
    client = new Anthropic({ apiKey: API_KEY, baseURL: fake.url, maxRetries: 0 });
  });
  afterAll(() => fake.close());
  beforeEach(() => fake.reset());

  it('answers a unary call with text and usage', async () => {
    const message = await client.messages.create(params);
    expect(message.content).toEqual([expect.objectContaining({ type: 'text', text: 'fake anthropic reply to: hello claude' })]);
    expect(message.model).toBe('claude-fake-1');
    expect(message.stop_reason).toBe('end_turn');
    expect(message.usage).toMatchObject({ input_tokens: 3, output_tokens: 10 });
    expect(fake.requests[0]).toMatchObject({ method: 'POST', path: '/v1/messages', stream: false, abortedByClient: false });
    expect(fake.requests[0]!.body.messages[0].content).toBe('hello claude');
  });

  it('streams deltas that concatenate to the text, with the final usage', async () => {
    fake.script({ text: 'streamed answer', usage: { inputTokens: 7, outputTokens: 5 }, finishReason: 'max_tokens' });
    const stream = client.messages.stream(params);
    const deltas: string[] = [];
    stream.on('text', (delta) => deltas.push(delta));
    const message = await stream.finalMessage();
    expect(deltas.length).toBe(3);
    expect(deltas.join('')).toBe('streamed answer');
    expect(message.content).toEqual([expect.objectContaining({ type: 'text', text: 'streamed answer' })]);
    expect(message.stop_reason).toBe('max_tokens');
    expect(message.usage).toMatchObject({ input_tokens: 7, output_tokens: 5 });
    expect(fake.requests[0]!.stream).toBe(true);
  });

  it('turns a scripted 529 into the SDK error with status and retry-after', async () => {
    fake.script({ status: 529, headers: { 'retry-after': '1' } });
    const error = await client.messages.create(params).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Anthropic.APIError);
    const apiError = error as InstanceType<typeof Anthropic.APIError>;
    expect(apiError.status).toBe(529);
    expect(apiError.type).toBe('overloaded_error');
    expect(apiError.headers?.get('retry-after')).toBe('1');
    expect(apiError.requestID).toMatch(/^req_/);
  });

  it('breaks a stream mid-way so iteration throws', async () => {
    fake.script({ chunks: ['one ', 'two ', 'three'], breakAfterChunks: 1 });
    const stream = await client.messages.create({ ...params, stream: true });
    const { items, error } = await drain(stream);
    expect(String(error)).toMatch(/terminated/); // undici: the body ended before the chunked stream did
    const texts = items.flatMap((e) => (e.type === 'content_block_delta' && e.delta.type === 'text_delta' ? [e.delta.text] : []));
    expect(texts).toEqual(['one ']);
    expect(items.some((e) => e.type === 'message_stop')).toBe(false);
  });

  it('records a client abort of a hanging call', async () => {
    fake.script({ hang: true });
    const controller = new AbortController();
    const call = client.messages.create(params, { signal: controller.signal });
    await requestsArrived(fake);
    controller.abort();
    await expect(call).rejects.toBeInstanceOf(Anthropic.APIUserAbortError);
    await fake.waitForAbort(0);
    expect(fake.requests[0]!.abortedByClient).toBe(true);
  });

  it('rejects a wrong api key with 401', async () => {
    const wrong = new Anthropic({ apiKey: 'wrong', baseURL: fake.url, maxRetries: 0 });
    const error = await wrong.messages.create(params).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Anthropic.AuthenticationError);
    expect((error as InstanceType<typeof Anthropic.APIError>).type).toBe('authentication_error');
  });
});

describe('fake Gemini upstream with the real SDK', () => {
  let fake: FakeUpstream;
  let ai: GoogleGenAI;
  const model = 'gemini-fake-flash';

  beforeAll(async () => {
    fake = await startFakeGemini({ apiKey: API_KEY });
    ai = new GoogleGenAI({ apiKey: API_KEY, httpOptions: { baseUrl: fake.url } });
  });
  afterAll(() => fake.close());
  beforeEach(() => fake.reset());

  it('answers a unary call with text and usage', async () => {
    const response = await ai.models.generateContent({ model, contents: 'hello gemini' });
    expect(response.text).toBe('fake gemini reply to: hello gemini');
    expect(response.candidates?.[0]?.finishReason).toBe('STOP');
    expect(response.usageMetadata).toEqual({ promptTokenCount: 3, candidatesTokenCount: 9, totalTokenCount: 12 });
    expect(response.modelVersion).toBe(model);
    expect(fake.requests[0]).toMatchObject({ path: `/v1/models/${model}:generateContent`, stream: false });
  });

  it('hands back scripted text for a JSON-mode request', async () => {
    fake.script({ text: '{"ok":true}' });
    const response = await ai.models.generateContent({
      model,
      contents: 'give me json',
      config: { responseMimeType: 'application/json' },
    });
    expect(JSON.parse(response.text ?? '')).toEqual({ ok: true });
    expect(fake.requests[0]!.body.generationConfig.responseMimeType).toBe('application/json');
  });

  it('streams chunks that concatenate to the text, with usage on the last', async () => {
    fake.script({ text: 'streamed answer', usage: { inputTokens: 7, outputTokens: 5 } });
    const chunks = [];
    for await (const chunk of await ai.models.generateContentStream({ model, contents: 'stream please' })) chunks.push(chunk);
    expect(chunks.length).toBe(3);
    expect(chunks.map((c) => c.text).join('')).toBe('streamed answer');
    const last = chunks.at(-1)!;
    expect(last.candidates?.[0]?.finishReason).toBe('STOP');
    expect(last.usageMetadata).toEqual({ promptTokenCount: 7, candidatesTokenCount: 5, totalTokenCount: 12 });
    expect(fake.requests[0]).toMatchObject({ url: `/v1/models/${model}:streamGenerateContent?alt=sse`, stream: true });
  });

  it('turns a scripted 503 into ApiError, with retry-after as header and as RetryInfo in the body', async () => {
    fake.script({ status: 503, headers: { 'retry-after': '1' } });
    const error = await ai.models.generateContent({ model, contents: 'hi' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(503);
    // The SDK's ApiError carries the JSON body as its message, but no headers.
    const body = JSON.parse((error as ApiError).message);
    expect(body.error).toMatchObject({ code: 503, status: 'UNAVAILABLE', details: [{ retryDelay: '1s' }] });

    // The header itself, as any client (e.g. a fetch wrapper in httpOptions.fetch) sees it.
    fake.script({ status: 503, headers: { 'retry-after': '1' } });
    const raw = await fetch(`${fake.url}/v1/models/${model}:generateContent`, {
      method: 'POST',
      headers: { 'x-goog-api-key': API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    });
    expect(raw.status).toBe(503);
    expect(raw.headers.get('retry-after')).toBe('1');
    await raw.body?.cancel();
  });

  it('breaks a stream mid-way so iteration throws', async () => {
    fake.script({ chunks: ['one ', 'two ', 'three'], breakAfterChunks: 1 });
    const { items, error } = await drain(await ai.models.generateContentStream({ model, contents: 'hi' }));
    expect(String(error)).toMatch(/terminated/); // undici: the body ended before the chunked stream did
    expect(items.map((c) => c.text)).toEqual(['one ']);
  });

  it('records a client abort of a hanging call', async () => {
    fake.script({ hang: true });
    const controller = new AbortController();
    const call = ai.models.generateContent({ model, contents: 'hi', config: { abortSignal: controller.signal } });
    await requestsArrived(fake);
    controller.abort();
    await expect(call).rejects.toThrow(/abort/i);
    await fake.waitForAbort(0);
  });

  it('rejects a wrong api key with 401, by header or by ?key=', async () => {
    const wrong = new GoogleGenAI({ apiKey: 'wrong', httpOptions: { baseUrl: fake.url } });
    const error = await wrong.models.generateContent({ model, contents: 'hi' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(401);

    const byQuery = await fetch(`${fake.url}/v1beta/models/${model}:generateContent?key=${API_KEY}`, {
      method: 'POST',
      body: JSON.stringify({ contents: [{ parts: [{ text: 'hi' }] }] }),
    });
    expect(byQuery.status).toBe(200);
    expect((await jsonOf(byQuery)).candidates[0].content.parts[0].text).toBe('fake gemini reply to: hi');
  });
});

describe('fake OpenAI upstream with the real SDK', () => {
  let fake: FakeUpstream;
  let client: OpenAI;
  const params = { model: 'gpt-fake', messages: [{ role: 'user' as const, content: 'hello gpt' }] };

  beforeAll(async () => {
    fake = await startFakeOpenAI({ apiKey: API_KEY });
    client = new OpenAI({ apiKey: API_KEY, baseURL: fake.url, maxRetries: 0 });
  });
  afterAll(() => fake.close());
  beforeEach(() => fake.reset());

  it('answers a unary call with text and usage', async () => {
    const completion = await client.chat.completions.create(params);
    expect(completion.choices[0]?.message.content).toBe('fake openai reply to: hello gpt');
    expect(completion.choices[0]?.finish_reason).toBe('stop');
    expect(completion.usage).toEqual({ prompt_tokens: 3, completion_tokens: 8, total_tokens: 11 });
    expect(completion.model).toBe('gpt-fake');
    expect(fake.requests[0]).toMatchObject({ path: '/v1/chat/completions', stream: false });
  });

  it('streams deltas that concatenate to the text, then a usage chunk when include_usage is set', async () => {
    fake.script({ text: 'streamed answer', usage: { inputTokens: 7, outputTokens: 5 }, model: 'gpt-fake-2026' });
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('streamed answer');
    expect(chunks.map((c) => c.choices[0]?.finish_reason).filter(Boolean)).toEqual(['stop']);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({ prompt_tokens: 7, completion_tokens: 5, total_tokens: 12 });
    expect(last.model).toBe('gpt-fake-2026');
  });

  it('sends no usage chunk without include_usage', async () => {
    const stream = await client.chat.completions.create({ ...params, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.every((c) => c.choices.length === 1 && c.usage === undefined)).toBe(true);
  });

  it('turns a scripted 429 into the SDK error with status and retry-after', async () => {
    fake.script({ status: 429, headers: { 'retry-after': '1' }, errorMessage: 'slow down' });
    const error = await client.chat.completions.create(params).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    const apiError = error as InstanceType<typeof OpenAI.APIError>;
    expect(apiError.status).toBe(429);
    expect(apiError.headers?.get('retry-after')).toBe('1');
    expect(apiError.code).toBe('rate_limit_exceeded');
    expect(apiError.message).toBe('429 slow down');
  });

  it('breaks a stream mid-way so iteration throws', async () => {
    fake.script({ chunks: ['one ', 'two ', 'three'], breakAfterChunks: 2 });
    const { items, error } = await drain(await client.chat.completions.create({ ...params, stream: true }));
    expect(String(error)).toMatch(/terminated/); // undici: the body ended before the chunked stream did
    expect(items.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('one two ');
  });

  it('records a client abort of a hanging call', async () => {
    fake.script({ hang: true });
    const controller = new AbortController();
    const call = client.chat.completions.create(params, { signal: controller.signal });
    await requestsArrived(fake);
    controller.abort();
    await expect(call).rejects.toBeInstanceOf(OpenAI.APIUserAbortError);
    await fake.waitForAbort(0);
  });

  it('rejects a wrong api key with 401', async () => {
    const wrong = new OpenAI({ apiKey: 'wrong', baseURL: fake.url, maxRetries: 0 });
    const error = await wrong.chat.completions.create(params).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('invalid_api_key');
  });
});

describe('fake upstream scripting and protocol errors', () => {
  let fake: FakeUpstream;
  let client: OpenAI;
  const params = { model: 'gpt-fake', messages: [{ role: 'user' as const, content: 'hi' }] };

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    client = new OpenAI({ apiKey: 'any', baseURL: fake.url, maxRetries: 0 });
  });
  afterAll(() => fake.close());
  beforeEach(() => fake.reset());

  it('consumes scripted replies in order, then falls back to the default; reset clears both', async () => {
    fake.script({ text: 'first' }, { text: 'second' });
    fake.setDefault({ text: 'default' });
    const texts = [];
    for (let i = 0; i < 3; i++) texts.push((await client.chat.completions.create(params)).choices[0]?.message.content);
    expect(texts).toEqual(['first', 'second', 'default']);
    expect(fake.requests.length).toBe(3);
    fake.reset();
    expect(fake.requests.length).toBe(0);
    expect((await client.chat.completions.create(params)).choices[0]?.message.content).toBe('fake openai reply to: hi');
  });

  it('drops the connection: a connection error for the SDK', async () => {
    fake.script({ dropConnection: true });
    await expect(client.chat.completions.create(params)).rejects.toBeInstanceOf(OpenAI.APIConnectionError);
    expect(fake.requests[0]!.abortedByClient).toBe(false);
  });

  it('stops waiting out a delay when the client disconnects', async () => {
    fake.script({ delayMs: 600_000 }); // ten minutes: only the client's disconnect ends it within the test
    const call = client.chat.completions.create(params, { timeout: 100 });
    await expect(call).rejects.toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    await fake.waitForAbort(0);
    expect(fake.requests[0]!.finishedAt).toBeDefined();
  });

  it('holds a reply until the test opens its gate', async () => {
    const release = gate();
    fake.script({ until: release.promise, text: 'released' });
    const call = client.chat.completions.create(params);
    await requestsArrived(fake);
    expect(fake.requests[0]!.finishedAt, 'answered before the gate opened').toBeUndefined();
    release.open();
    expect((await call).choices[0]?.message.content).toBe('released');
  });

  it('answers unknown paths with 404 and malformed JSON with 400, in each vendor format, without using the script', async () => {
    const anthropic = await startFakeAnthropic();
    const gemini = await startFakeGemini();
    try {
      fake.script({ text: 'kept for the model call' });
      const notFound = await fetch(`${fake.url}/nope`, { method: 'POST', body: '{}' });
      expect(notFound.status).toBe(404);
      expect((await jsonOf(notFound)).error).toMatchObject({ type: 'invalid_request_error', param: null });
      const badJson = await fetch(`${fake.url}/chat/completions`, { method: 'POST', body: '{oops' });
      expect(badJson.status).toBe(400);
      expect(fake.requests[1]!.body).toBe('{oops');
      expect((await client.chat.completions.create(params)).choices[0]?.message.content).toBe('kept for the model call');

      const a404 = await fetch(`${anthropic.url}/v1/complete`, { method: 'POST', body: '{}' });
      expect(a404.status).toBe(404);
      expect(await a404.json()).toMatchObject({ type: 'error', error: { type: 'not_found_error' } });
      const a400 = await fetch(`${anthropic.url}/v1/messages`, { method: 'POST', body: 'nope' });
      expect(await a400.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });

      const g404 = await fetch(`${gemini.url}/v1/models/x:countTokens`, { method: 'POST', body: '{}' });
      expect(await g404.json()).toMatchObject({ error: { code: 404, status: 'NOT_FOUND' } });
      const g400 = await fetch(`${gemini.url}/v1/models/x:generateContent`, { method: 'POST', body: '[' });
      expect(await g400.json()).toMatchObject({ error: { code: 400, status: 'INVALID_ARGUMENT' } });
    } finally {
      await Promise.all([anthropic.close(), gemini.close()]);
    }
  });

  it('paces chunks with chunkDelayMs', async () => {
    fake.script({ chunks: ['a', 'b', 'c'], chunkDelayMs: 40 });
    const started = Date.now();
    const { items, error } = await drain(await client.chat.completions.create({ ...params, stream: true }));
    expect(error).toBeUndefined();
    expect(items.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('abc');
    expect(Date.now() - started).toBeGreaterThanOrEqual(75);
  });
});
