#!/usr/bin/env node
// The `elexirion` command as npm links it (`npx elexirion ...` from the repository). A committed
// file rather than dist/main.js itself: npm links a workspace's bin at install time, before the
// TypeScript is built, and skips a target that does not exist yet.
try {
  await import('../dist/main.js');
} catch (error) {
  if (error?.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes('server/dist/main.js')) {
    process.stderr.write('elexirion: not built yet: run `npm run build` (or `bash scripts/setup.sh`) first\n');
    process.exit(1);
  }
  throw error;
}
