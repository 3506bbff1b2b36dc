#!/usr/bin/env node
import { runService } from '@elexirion/kit';
import { agentService } from './agent-service.js';

await runService(agentService);
