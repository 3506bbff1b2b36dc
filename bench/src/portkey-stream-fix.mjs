// Preloaded into the Portkey anchor that the `openai` scenario streams through (`node --import`).
// Portkey 1.15.2 on Node fails every streamed chat completion with "TypeError: immutable": it
// appends its x-portkey-* headers to the upstream fetch Response, whose headers the fetch spec
// makes immutable (Portkey-AI/gateway issues #1389 and #1550). This applies the fix proposed
// upstream (pull request #1551): a streamed upstream response is re-wrapped in a new Response,
// same status, headers and body, whose headers may be appended to. Non-streamed responses are
// left alone.
const upstreamFetch = globalThis.fetch;
globalThis.fetch = async function fetchWithMutableStreamHeaders(...args) {
  const response = await upstreamFetch.apply(this, args);
  if (!response.headers.get('content-type')?.startsWith('text/event-stream')) return response;
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers: new Headers(response.headers) });
};
