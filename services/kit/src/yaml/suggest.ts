import { closestMatch } from 'leven';

/**
 * `; did you mean "prompt"?` when a known name is a near miss of `word` (Levenshtein distance up
 * to a third of its length, at least 1), else "".
 */
export function didYouMean(word: string, known: readonly string[]): string {
  const match = closestMatch(word, known, { maxDistance: Math.max(1, Math.ceil(word.length / 3)) });
  return match === undefined || match === word ? '' : `; did you mean "${match}"?`;
}
