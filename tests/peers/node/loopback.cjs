// server-everything calls listen(PORT) without a host, i.e. on every interface.
// Preloaded with `node -r ./loopback.cjs`, this puts such calls on 127.0.0.1 instead.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const portOnly = typeof args[0] === 'number' || /^\d+$/.test(args[0]);
  if (portOnly && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  return listen.apply(this, args);
};
