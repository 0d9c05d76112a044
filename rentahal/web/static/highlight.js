// Answers as text with fenced code blocks set apart and lightly highlighted. Everything is
// built from text nodes and spans: a model's output can never become markup.

const FENCE = /```([\w+#.-]*)[^\n]*\n([\s\S]*?)(?:```|$)/g;
const KEYWORDS = new Set((
  "as async await break case catch class const continue def default del do elif else enum " +
  "except export extends false finally fn for from func function if impl import in interface " +
  "is let match mut new nil none not null or pass private pub public raise return self static " +
  "struct super switch this throw true try type use var void while with yield"
).split(" "));
// One token at a time: comment, string, number, word, anything else.
const TOKEN = /(\/\/[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\/)|("(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`)|(\b\d[\d_.]*(?:e[+-]?\d+)?\b)|([A-Za-z_][\w]*)|([\s\S])/g;

function span(className, text) {
  const node = document.createElement("span");
  node.className = className;
  node.textContent = text;
  return node;
}

/** `code` as a <code> element whose comments, strings, numbers and keywords are spans. */
export function highlighted(code, language) {
  const node = document.createElement("code");
  if (language) node.dataset.language = language;
  let plain = "";
  const flush = () => { if (plain) { node.append(plain); plain = ""; } };
  for (const [, comment, string, number, word, other] of code.matchAll(TOKEN)) {
    if (comment && !(comment.startsWith("#") && /^(c|cpp|js|ts|javascript|typescript|css|go|rust|java)$/.test(language))) {
      flush(); node.append(span("tok-comment", comment));
    } else if (comment) {
      plain += comment;
    } else if (string) { flush(); node.append(span("tok-string", string)); }
    else if (number) { flush(); node.append(span("tok-number", number)); }
    else if (word && KEYWORDS.has(word)) { flush(); node.append(span("tok-keyword", word)); }
    else plain += word || other;
  }
  flush();
  return node;
}

/** Fill `container` with `text`: paragraphs as text, fenced blocks as highlighted code. */
export function renderAnswer(container, text) {
  container.replaceChildren();
  let last = 0;
  for (const match of text.matchAll(FENCE)) {
    if (match.index > last) container.append(text.slice(last, match.index));
    const pre = document.createElement("pre");
    const language = match[1].toLowerCase();
    pre.append(highlighted(match[2].replace(/\n$/, ""), language));
    if (language) pre.dataset.language = language;
    container.append(pre);
    last = match.index + match[0].length;
  }
  if (last < text.length) container.append(text.slice(last));
}
