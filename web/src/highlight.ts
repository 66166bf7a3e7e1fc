// Search highlights without HTML: the server's `content` is text with `&`, `<`, `>` escaped
// and matches wrapped in literal `<mark>`…`</mark>`. It is split on those two tags and every
// piece is unescaped to plain text, which the template renders as text nodes (never as HTML).

export interface Segment {
  text: string;
  mark: boolean;
}

const ENTITIES: Record<string, string> = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&#x27;": "'" };

function unescape(s: string): string {
  return s.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (e) => ENTITIES[e] ?? e);
}

export function segments(html: string): Segment[] {
  const out: Segment[] = [];
  let mark = false;
  for (const part of html.split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>") mark = true;
    else if (part === "</mark>") mark = false;
    else if (part) out.push({ text: unescape(part), mark });
  }
  return out;
}
