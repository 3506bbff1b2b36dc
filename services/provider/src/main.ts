#!/usr/bin/env node
import { runService } from '@elexirion/kit';
import { providerService } from './provider-service.js';

await runService(providerService);
