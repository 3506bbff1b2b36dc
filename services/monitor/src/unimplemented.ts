import { ServerError, Status } from '@elexirion/kit';

// Scaffolding while issue 14's parts land: a call not built yet answers UNIMPLEMENTED.
export function unimplemented(method: string): never {
  throw new ServerError(Status.UNIMPLEMENTED, `Monitor.${method} is not implemented yet`);
}
