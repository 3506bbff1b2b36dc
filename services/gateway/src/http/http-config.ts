import { z } from 'zod';
import { ACCESS_LOG_LEVELS } from '@elexirion/kit';

const KIB = 1024;
const MIB = 1024 * KIB;

const bytes = (fallback: number, description: string) => z.coerce.number().int().min(1024).max(64 * MIB).default(fallback).describe(description);

// Settings of this area, spread into the gateway's config schema.
export const httpConfigShape = {
  // Request size limits, by the kind of call, in bytes of the encoded request (protobuf on gRPC,
  // JSON on HTTP). Over them: gRPC RESOURCE_EXHAUSTED before decoding, HTTP 413.
  GATEWAY_MAX_REQUEST_BYTES: bytes(64 * KIB, 'Largest request of a call with no bigger need (ids, filters, keys).'),
  GATEWAY_MAX_CHAT_REQUEST_BYTES: bytes(512 * KIB, 'Largest Chat/ChatStream request: a 100 000-character message in UTF-8 and its fields.'),
  // Twice the 1 MiB the calls check per field (inputs, inline YAML, prompt overrides), so a field
  // over its limit is refused naming it, and the envelope still bounds memory.
  GATEWAY_MAX_PIPELINE_REQUEST_BYTES: bytes(2 * MIB, 'Largest ExecutePipeline(Stream), ValidatePipeline or SubmitJob request: inputs, inline YAML and prompt overrides together.'),
  GATEWAY_MAX_COMPLETE_REQUEST_BYTES: bytes(MIB, 'Largest Complete/CompleteStream request (and OpenAI chat completion body): its messages together.'),
  // Browser origins allowed to call the HTTP API, comma-separated, or "*"; empty: CORS off.
  GATEWAY_CORS_ORIGINS: z
    .string()
    .default('')
    .transform((value, context) => {
      const origins = value.split(',').map((origin) => origin.trim()).filter(Boolean);
      for (const origin of origins) {
        if (origin === '*') continue;
        let parsed: URL | undefined;
        try {
          parsed = new URL(origin);
        } catch {
          parsed = undefined;
        }
        if (!parsed || parsed.origin !== origin) context.addIssue({ code: 'custom', message: `"${origin}" is not an origin (scheme://host[:port], no path), nor "*"` });
      }
      return origins;
    }),
  // One structured line per request, HTTP (the kit's server) and gRPC (access-log.ts): its level, or off.
  GATEWAY_ACCESS_LOG_LEVEL: z.enum(ACCESS_LOG_LEVELS).default('info'),
  // The pages (chat, jobs, prompts, dashboard) on the HTTP port: on, or off for an API-only gateway.
  GATEWAY_WEB: z.enum(['on', 'off']).default('on'),
  // Where the built pages are (web/build.mjs's output); empty: the repository's web/dist.
  GATEWAY_WEB_DIR: z.string().default(''),
} satisfies z.ZodRawShape;
