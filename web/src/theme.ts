// The colour scheme in effect is <html data-theme="light|dark"> (the shell sets it); the CSS
// variables of styles.css follow it.

/** Fired on window after the colour scheme changed: charts re-read their colours. */
export const THEME_CHANGED_EVENT = 'elexirion:theme-changed';

/** A CSS variable's value in the scheme in effect, e.g. cssVariable('--fg') -> "#1b1f24". */
export function cssVariable(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}
