export { agentService } from './agent-service.js';
export { RouteTable, routeTableDocument, type PipelineShape, type RouteTableDocument, type RuleMatch } from './routing/route-table.js';
