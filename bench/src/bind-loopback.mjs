// Preloaded into the Portkey anchor (`node --import`): its start script listens on every
// interface with no way to choose one, so a listen() with a port and no host gets 127.0.0.1.
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const [first, second] = args;
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    if (second === undefined || typeof second === 'function' || typeof second === 'number') args.splice(1, 0, '127.0.0.1');
    else if (second === '0.0.0.0' || second === '::') args[1] = '127.0.0.1';
  } else if (first && typeof first === 'object' && !('path' in first) && !('fd' in first) && !('handle' in first) && !('_handle' in first)) {
    if (first.host === undefined || first.host === '0.0.0.0' || first.host === '::') args[0] = { ...first, host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
