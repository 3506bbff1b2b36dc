export { agentService } from './agent-service.js';
export { RouteClassifier, type ClassifierVerdict } from './routing/classifier.js';
export { RouteFile, type RouteFileOptions } from './routing/route-file.js';
export { RouteTable, revisionOf, routeTableDocument, type PipelineShape, type RouteTableDocument, type RuleMatch } from './routing/route-table.js';
export { decideRoute, type RouteChoice, type Router } from './routing/router.js';
export * from './fallback/index.js';
