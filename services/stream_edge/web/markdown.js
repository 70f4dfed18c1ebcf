// Markdown → DOM for the answers on the Sluice page: paragraphs, headings, lists, block quotes, fenced code,
// inline code, bold, italic and links.
//
// Sanitized by construction: it builds elements and text nodes, never HTML strings, so markup in an answer
// (`<script>`, `<img onerror>`) is shown as the text it is. Nothing outside the edge is loaded or linked: an image
// becomes its alt text, and a link becomes an anchor only when it stays on this edge (a path starting with `/`);
// any other target is shown as text next to the link's words. The page's Content-Security-Policy says the same.
"use strict";

window.SluiceMarkdown = (() => {
  // `_` emphasis never starts or ends inside a word (CommonMark): `convert_units` stays as written.
  const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|(?<!\w)__([^_]+)__(?!\w)|\*([^*\s][^*]*)\*|(?<!\w)_([^_\s][^_]*)_(?!\w)|!\[([^\]]*)\]\([^)]*\)|\[([^\]]+)\]\(([^)\s]+)\)/;

  function el(tag, ...children) {
    const node = document.createElement(tag);
    for (const child of children) node.append(child);
    return node;
  }

  // Inline spans of one block's text, as nodes.
  function inline(text) {
    const out = [];
    let rest = text;
    while (rest) {
      const m = INLINE.exec(rest);
      if (!m) {
        out.push(document.createTextNode(rest));
        break;
      }
      if (m.index) out.push(document.createTextNode(rest.slice(0, m.index)));
      if (m[2] !== undefined) out.push(el("code", m[2]));
      else if (m[3] !== undefined || m[4] !== undefined) out.push(el("strong", ...inline(m[3] ?? m[4])));
      else if (m[5] !== undefined || m[6] !== undefined) out.push(el("em", ...inline(m[5] ?? m[6])));
      else if (m[7] !== undefined) out.push(document.createTextNode(m[7])); // an image: its alt text only
      else out.push(...link(m[8], m[9]));
      rest = rest.slice(m.index + m[0].length);
    }
    return out;
  }

  function link(words, target) {
    if (/^\/(?!\/)/.test(target) && !target.includes("\\")) {
      const a = el("a", ...inline(words));
      a.setAttribute("href", target);
      return [a];
    }
    return [...inline(words), document.createTextNode(` (${target})`)];
  }

  function paragraph(lines) {
    const p = el("p");
    lines.forEach((line, i) => {
      if (i) p.append(el("br"));
      p.append(...inline(line.trim()));
    });
    return p;
  }

  // The whole text, as a DocumentFragment of block elements.
  function render(text) {
    const out = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = /^\s*(```|~~~)\s*([\w+-]*)\s*$/.exec(line);
      if (fence) {
        const body = [];
        for (i += 1; i < lines.length && !lines[i].trim().startsWith(fence[1]); i += 1) body.push(lines[i]);
        i += 1;
        const code = el("code", body.join("\n"));
        if (fence[2]) code.dataset.lang = fence[2];
        out.append(el("pre", code));
        continue;
      }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) {
        out.append(el(`h${Math.min(heading[1].length + 2, 6)}`, ...inline(heading[2])));
        i += 1;
        continue;
      }
      const item = /^\s*([-*+]|\d+[.)])\s+/;
      if (item.test(line)) {
        const ordered = /\d/.test(item.exec(line)[1]);
        const list = el(ordered ? "ol" : "ul");
        while (i < lines.length && item.test(lines[i])) {
          list.append(el("li", ...inline(lines[i].replace(item, ""))));
          i += 1;
        }
        out.append(list);
        continue;
      }
      if (/^\s*>/.test(line)) {
        const quoted = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ""));
        out.append(el("blockquote", render(quoted.join("\n"))));
        continue;
      }
      if (!line.trim()) {
        i += 1;
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !/^(\s*(```|~~~)|#{1,6}\s|\s*([-*+]|\d+[.)])\s|\s*>)/.test(lines[i])) {
        para.push(lines[i++]);
      }
      out.append(paragraph(para));
    }
    return out;
  }

  return { render };
})();
