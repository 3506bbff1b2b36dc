// Lets Node 24 run the bench's TypeScript directly (its built-in type stripping) and import the
// test helpers in test/support, which use the compiled-output convention `./x.js` for `./x.ts`:
// a relative `.js` specifier from a `.ts` file resolves to the `.ts` file when no `.js` exists.
import { existsSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { fileURLToPath } from 'node:url';

registerHooks({
  resolve(specifier, context, next) {
    if (specifier.startsWith('.') && specifier.endsWith('.js') && context.parentURL?.endsWith('.ts')) {
      const url = new URL(specifier, context.parentURL);
      if (!existsSync(fileURLToPath(url))) return next(`${specifier.slice(0, -3)}.ts`, context);
    }
    return next(specifier, context);
  },
});
