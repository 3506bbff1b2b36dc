#!/usr/bin/env node
import { runHost } from '@elexirion/kit';
import { providerService } from './provider-service.js';

await runHost([providerService]);
