// Model output as Markdown: marked renders it, DOMPurify removes anything that could run (script,
// event handler attributes, javascript: links), and links open apart from the page.
import DOMPurify from 'dompurify';
import { marked } from 'marked';

// An instance of its own: the link hook below stays out of other pages' sanitising.
const purify = DOMPurify(window);

purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    // The opened page gets no handle on this one (window.opener) and no referrer.
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

export function renderMarkdown(text: string): string {
  const html = marked.parse(text, { async: false, gfm: true, breaks: false });
  // No style attributes either: the page's CSP refuses inline styles, and they would only be noise.
  return purify.sanitize(html, { FORBID_ATTR: ['style'], FORBID_TAGS: ['style', 'form', 'input', 'button'] });
}

export function Markdown({ text, class: className }: { text: string; class?: string }) {
  return <div class={className} dangerouslySetInnerHTML={{ __html: renderMarkdown(text) }} />;
}
