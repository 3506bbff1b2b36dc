import { ServerError, Status } from '@elexirion/kit';

// Scaffolding while the parts land: a call not built yet answers UNIMPLEMENTED.
export function unimplemented(method: string): never {
  throw new ServerError(Status.UNIMPLEMENTED, `Gateway.${method} is not implemented yet`);
}
