#!/usr/bin/env node
import { runService } from '@elexirion/kit';
import { gatewayService } from './gateway-service.js';

await runService(gatewayService);
