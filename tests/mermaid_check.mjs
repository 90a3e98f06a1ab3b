// Parse a Mermaid flowchart with mermaid's own parser; print its vertices, edges and subgraphs as JSON.
import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window; globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
const fs = await import('fs');
const text = fs.readFileSync(process.argv[2], 'utf8');
try {
  await mermaid.parse(text);
  const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
  const db = diagram.db;
  const dec = s => String(s).replace(/ﬂ°°(\d+)¶ß/g, (_, n) => String.fromCodePoint(Number(n))).replace(/ﬂ°(\w+)¶ß/g, (_, n) => ({quot: "\"", amp: "&", lt: "<", gt: ">"}[n] ?? "#" + n + ";"));
  const vertices = [...db.getVertices().values()].map(v => ({ id: v.id, text: dec(v.text) }));
  const edges = db.getEdges().map(e => ({ start: e.start, end: e.end, text: dec(e.text), stroke: e.stroke }));
  const subgraphs = db.getSubGraphs().map(s => ({ id: s.id, title: dec(s.title), nodes: s.nodes }));
  console.log(JSON.stringify({ vertices, edges, subgraphs }));
} catch (e) { console.error(String(e.message || e)); process.exit(1); }
