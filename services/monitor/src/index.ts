export { monitorService } from './monitor-service.js';
