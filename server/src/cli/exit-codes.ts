import { Status } from 'nice-grpc';

// Exit codes scripts can rely on: one code per thing a script would do differently (retry later,
// fix the key, give up), not one per gRPC status. Printed by `elexirion --help` and the README.

export const ExitCode = {
  OK: 0,
  /** The work failed or the input is invalid: a failed job, an invalid pipeline, any other status. */
  FAILED: 1,
  /** The command line is wrong: unknown option, missing argument, unreadable file. */
  USAGE: 2,
  /** UNAUTHENTICATED or PERMISSION_DENIED: no key, a wrong key, or a key without the scope. */
  AUTH: 3,
  /** NOT_FOUND: no such job, pipeline or key. */
  NOT_FOUND: 4,
  /** UNAVAILABLE or DEADLINE_EXCEEDED: the gateway is unreachable or too slow; retrying may help. */
  UNAVAILABLE: 5,
  /** RESOURCE_EXHAUSTED: a rate limit or budget of the key; retry after the limit's window. */
  EXHAUSTED: 6,
  /** UNIMPLEMENTED: the gateway does not have this call (an older server). */
  UNIMPLEMENTED: 7,
  /** Interrupted (Ctrl-C): the call was cancelled. 128 + SIGINT, as shells report it. */
  INTERRUPTED: 130,
} as const;

/** The exit code a gRPC status stands for. */
export function exitCodeOf(status: Status): number {
  switch (status) {
    case Status.OK:
      return ExitCode.OK;
    case Status.UNAUTHENTICATED:
    case Status.PERMISSION_DENIED:
      return ExitCode.AUTH;
    case Status.NOT_FOUND:
      return ExitCode.NOT_FOUND;
    case Status.UNAVAILABLE:
    case Status.DEADLINE_EXCEEDED:
      return ExitCode.UNAVAILABLE;
    case Status.RESOURCE_EXHAUSTED:
      return ExitCode.EXHAUSTED;
    case Status.UNIMPLEMENTED:
      return ExitCode.UNIMPLEMENTED;
    case Status.CANCELLED:
      return ExitCode.INTERRUPTED;
    default:
      return ExitCode.FAILED;
  }
}

/** The table for `--help` and the README. */
export const exitCodeHelp = `Exit codes:
  0    ok
  1    failed: the job failed or was cancelled, the pipeline is invalid, or any other error
  2    usage: unknown option, missing or malformed argument, unreadable file
  3    UNAUTHENTICATED or PERMISSION_DENIED (no key, wrong key, key without the scope)
  4    NOT_FOUND
  5    UNAVAILABLE or DEADLINE_EXCEEDED (gateway unreachable or too slow: retrying may help)
  6    RESOURCE_EXHAUSTED (a rate limit or budget of the key: retry later)
  7    UNIMPLEMENTED (the gateway does not have this call)
  130  interrupted (Ctrl-C cancels the call)
  serve: 78 when the configuration is invalid, 1 when a service cannot start`;
