import type { WhenCondition } from './schema.js';
import { TemplateError, renderTemplate, type Scope } from './templates.js';

const FALSY = new Set(['', 'false', '0', 'null', '[]', '{}']);

function truthy(text: string): boolean {
  return !FALSY.has(text.trim().toLowerCase());
}

function number(text: string, where: string): number {
  const value = Number(text.trim());
  if (text.trim() === '' || !Number.isFinite(value)) throw new TemplateError(`${where}: "${text.slice(0, 60)}" is not a number`);
  return value;
}

/** Evaluates a declarative `when:`; operands are templates, compared as text (numbers for greater/less). */
export function evaluateCondition(condition: WhenCondition, scope: Scope): boolean {
  if (typeof condition === 'string') return truthy(renderTemplate(condition, scope));
  const render = (text: string) => renderTemplate(text, scope);
  if ('equals' in condition) return render(condition.equals[0]).trim() === render(condition.equals[1]).trim();
  if ('not_equals' in condition) return render(condition.not_equals[0]).trim() !== render(condition.not_equals[1]).trim();
  if ('contains' in condition) return render(condition.contains[0]).includes(render(condition.contains[1]));
  if ('greater_than' in condition) return number(render(condition.greater_than[0]), 'greater_than') > number(render(condition.greater_than[1]), 'greater_than');
  if ('less_than' in condition) return number(render(condition.less_than[0]), 'less_than') < number(render(condition.less_than[1]), 'less_than');
  if ('empty' in condition) return render(condition.empty).trim() === '';
  if ('not_empty' in condition) return render(condition.not_empty).trim() !== '';
  if ('all' in condition) return condition.all.every((part) => evaluateCondition(part, scope));
  if ('any' in condition) return condition.any.some((part) => evaluateCondition(part, scope));
  return !evaluateCondition(condition.not, scope);
}

/** Every template inside a condition, for static checks. */
export function conditionTemplates(condition: WhenCondition): string[] {
  if (typeof condition === 'string') return [condition];
  if ('all' in condition) return condition.all.flatMap(conditionTemplates);
  if ('any' in condition) return condition.any.flatMap(conditionTemplates);
  if ('not' in condition) return conditionTemplates(condition.not);
  return Object.values(condition).flat() as string[];
}
