#!/usr/bin/env node
import { runHost } from '@elexirion/kit';
import { gatewayService } from './gateway-service.js';

await runHost([gatewayService]);
