#!/usr/bin/env node
// The `elexirion` binary, one shape for serving and for using the platform:
//   elexirion serve --services gateway,agent     hosts services (also the older `elexirion --services ...`)
//   elexirion chat "hello"                       a client of the gateway's public gRPC API
// `elexirion --help` lists the commands and the exit codes scripts can rely on.
import { run } from './cli/run.js';

// A reader that went away (`elexirion events --follow | head -1`) ends the command quietly, as
// for any Unix filter, instead of a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const exitCode = await run(process.argv.slice(2));
// A client command ends once its output is flushed; serving, the host decides when to exit.
if (exitCode !== undefined) process.exitCode = exitCode;
