export { createServer, DEFAULT_HEADERS_TIMEOUT_MS, DEFAULT_KEEP_ALIVE_TIMEOUT_MS, DEFAULT_SOCKET_TIMEOUT_MS, type ServerOptions } from './server.js'
export { createMux, type Handler, type Route, type MuxComponents, type CompletedRequest } from './mux.js'
export { writeError, INTERNAL_ERROR_BODY, INTERNAL_ERROR_STATUS, type WriteErrorOptions } from './errors.js'
export { trackResponse, responseRecord, attachError, addLogAttrs, requestTarget, clientIp, type ResponseRecord } from './response.js'
