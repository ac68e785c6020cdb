// Model output as Markdown, made safe: marked turns it into HTML, DOMPurify
// removes everything that could run or load (scripts, handlers, forms,
// styles, frames, remote images), and the result is handed back as DOM
// nodes, never as an HTML string the page would parse again.

import DOMPurify from 'dompurify';
import { marked } from 'marked';

marked.setOptions({ gfm: true, breaks: true });

// Images are replaced by their alt text: loading them would reach another
// origin (the CSP forbids it, and a model must not make the browser call out).
DOMPurify.addHook('uponSanitizeElement', (node, data) => {
  if (data.tagName === 'img') {
    const alt = node.getAttribute('alt') || 'image';
    node.replaceWith(node.ownerDocument.createTextNode('[' + alt + ']'));
  }
});

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('rel', 'noopener noreferrer nofollow');
    node.setAttribute('target', '_blank');
  }
});

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object',
    'embed', 'svg', 'math', 'video', 'audio', 'source', 'link', 'meta', 'base'],
  FORBID_ATTR: ['style', 'srcset', 'action', 'formaction'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#|\/(?!\/))/i,
};

export function renderMarkdown(text) {
  const html = marked.parse(text || '', { async: false });
  return DOMPurify.sanitize(html, PURIFY);
}
