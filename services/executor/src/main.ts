#!/usr/bin/env node
import { runService } from '@elexirion/kit';
import { executorService } from './executor-service.js';

await runService(executorService);
