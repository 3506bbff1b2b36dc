import { z } from 'zod';

// Settings of this area, spread into the gateway's config schema.
export const keysConfigShape = {
  // Secure by default: a gateway started without the setting asks for keys. `npm start` turns
  // them off explicitly (and the gateway says so at start).
  GATEWAY_AUTH: z.enum(['on', 'off'], { error: 'expected on or off' }).default('on'),
  // A bootstrap admin secret (a key named "bootstrap" with the admin scope) to create the first
  // keys with; never logged. At least 24 characters: it is a password to everything.
  GATEWAY_ADMIN_KEY: z
    .string()
    .min(24, 'expected at least 24 characters (it opens every call)')
    .refine((value) => !value.startsWith('elx_'), 'must not start with elx_ (the form of the keys it creates)')
    .optional(),
} satisfies z.ZodRawShape;
