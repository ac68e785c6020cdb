// Bundles the pages' JavaScript and CSS with esbuild into OUTDIR and writes a
// manifest (JSON: every file of OUTDIR, relative and absolute) for
// gen_assets.py, which turns them into the dataplane's C asset table.
//   node build.mjs OUTDIR MANIFEST
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [outArg, manifestArg] = process.argv.slice(2);
if (!outArg || !manifestArg) {
  console.error('usage: node build.mjs OUTDIR MANIFEST');
  process.exit(2);
}
const out = resolve(outArg);
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'assets'), { recursive: true });

await build({
  absWorkingDir: here,
  entryPoints: { chat: 'src/chat.js', admin: 'src/admin.js' },
  outdir: join(out, 'assets'),
  entryNames: '[name]',
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
});

for (const f of ['index.html', 'admin.html']) copyFileSync(join(here, 'src', f), join(out, f));
copyFileSync(join(here, 'src', 'favicon.svg'), join(out, 'assets', 'favicon.svg'));

const files = [];
const walk = (d) => {
  for (const n of readdirSync(d).sort()) {
    const p = join(d, n);
    if (statSync(p).isDirectory()) walk(p);
    else files.push({ path: relative(out, p), abs: p });
  }
};
walk(out);
writeFileSync(resolve(manifestArg), JSON.stringify({ root: out, files }, null, 1) + '\n');
