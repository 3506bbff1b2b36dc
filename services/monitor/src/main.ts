#!/usr/bin/env node
import { runService } from '@elexirion/kit';
import { monitorService } from './monitor-service.js';

await runService(monitorService);
