/**
 * Who asks, as one service tells another: metadata the gateway builds from the API key it
 * accepted (never the client's own values, which it does not forward) and the monitor sets for
 * its own calls.
 */
/** The caller's name: the API key's name (empty with keys off), or the calling service's ("monitor"). */
export const CALLER_METADATA = 'x-elexirion-caller';
/** "true" when the caller's key has the admin scope (or keys are off). */
export const CALLER_ADMIN_METADATA = 'x-elexirion-caller-admin';
/**
 * "true" on the monitor's guard decisions (recorded as guard_promote / guard_rollback): a marker
 * of its own rather than the caller's name, as a key may be called "monitor".
 */
export const GUARD_METADATA = 'x-elexirion-guard';
