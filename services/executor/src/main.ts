#!/usr/bin/env node
import { runHost } from '@elexirion/kit';
import { executorService } from './executor-service.js';

await runHost([executorService]);
