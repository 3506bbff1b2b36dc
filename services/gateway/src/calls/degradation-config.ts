import type { z } from 'zod';

// Settings of this area, spread into the gateway's config schema.
export const degradationConfigShape = {} satisfies z.ZodRawShape;
