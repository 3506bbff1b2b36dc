#!/usr/bin/env node
import { runHost } from '@elexirion/kit';
import { agentService } from './agent-service.js';

await runHost([agentService]);
