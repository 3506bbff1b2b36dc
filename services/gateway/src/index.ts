export { gatewayService } from './gateway-service.js';
export { DEFAULT_WEB_DIR, WEB_PAGE_PATHS, loadWebPages, webPages } from './http/web-pages.js';
