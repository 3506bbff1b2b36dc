import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { unimplemented } from '../unimplemented.js';

/** Executions (completed runs), their feedback, and prompt version statistics. */
export async function executionsArea(_context: MonitorContext): Promise<MonitorArea<'listExecutions' | 'getExecution' | 'recordFeedback' | 'getPromptVersionStats'>> {
  return {
    implementation: {
      listExecutions: async () => unimplemented('ListExecutions'),
      getExecution: async () => unimplemented('GetExecution'),
      recordFeedback: async () => unimplemented('RecordFeedback'),
      getPromptVersionStats: async () => unimplemented('GetPromptVersionStats'),
    },
    close: async () => {},
  };
}
