export { agentService } from './agent-service.js';
export { RouteClassifier, type ClassifierVerdict } from './routing/classifier.js';
// The route table moved to the kit (the gateway reads routes.yaml too); still exported here for the agent's users.
export { RouteFile, RouteTable, revisionOf, routeTableDocument, type PipelineShape, type RouteFileOptions, type RouteTableDocument, type RuleMatch } from '@elexirion/kit';
export { AGENT_ROUTE_FILE_NAMING, decideRoute, type RouteChoice, type Router } from './routing/router.js';
export * from './fallback/index.js';
