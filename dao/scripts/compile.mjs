#!/usr/bin/env node
// Compiles dao/contracts/*.sol with the pinned solc-js and OpenZeppelin and writes
// artifacts/<Contract>.json (abi, bytecode, deployedBytecode, compiler settings).
//
// The DAO contracts have no package.json of their own: they use chain-anchor's node_modules
// (`npm ci` in chain-anchor), so one package-lock.json pins solc, OpenZeppelin and anvil for both
// crates and the two can never drift apart.
//
//   node scripts/compile.mjs          write the artifacts
//   node scripts/compile.mjs --check  exit 1 if the committed artifacts differ from the sources
//
// Output is deterministic: same sources + same package-lock.json = same bytes. Rust builds read
// the committed artifacts and need no compiler.
import { readFileSync, readdirSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const modules = join(root, "..", "chain-anchor", "node_modules");
const require = createRequire(join(modules, "..", "package.json"));
const solc = require("solc");

const EXPECTED_SOLC = "0.8.28";
const check = process.argv.includes("--check");

const version = solc.version();
if (!version.startsWith(`${EXPECTED_SOLC}+`)) {
  console.error(`solc ${version} is installed, ${EXPECTED_SOLC} is pinned: run \`npm ci\` in chain-anchor`);
  process.exit(2);
}

const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const sources = {};
for (const name of readdirSync(join(root, "contracts")).sort()) {
  if (name.endsWith(".sol")) {
    sources[`contracts/${name}`] = { content: readFileSync(join(root, "contracts", name), "utf8") };
  }
}

function findImports(path) {
  const file = join(modules, path);
  if (!path.startsWith("@openzeppelin/contracts/") || !existsSync(file)) {
    return { error: `import ${path} not found (only @openzeppelin/contracts is available; run \`npm ci\`)` };
  }
  return { contents: readFileSync(file, "utf8") };
}

const input = { language: "Solidity", sources, settings };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

const artifacts = {};
for (const [sourceName, contracts] of Object.entries(output.contracts)) {
  if (!sourceName.startsWith("contracts/")) continue;
  for (const [contractName, c] of Object.entries(contracts)) {
    if (c.evm.bytecode.object.length === 0) continue; // interfaces and abstract contracts
    const artifact = {
      contractName,
      sourceName,
      compiler: { version, settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion } },
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
    };
    artifacts[`${contractName}.json`] = `${JSON.stringify(artifact, null, 2)}\n`;
  }
}

const dir = join(root, "artifacts");
if (check) {
  let stale = false;
  const committed = existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith(".json")) : [];
  for (const name of new Set([...committed, ...Object.keys(artifacts)])) {
    const path = join(dir, name);
    const have = existsSync(path) ? readFileSync(path, "utf8") : null;
    if (have !== artifacts[name]) {
      console.error(`artifacts/${name} differs from what contracts/ compiles to`);
      stale = true;
    }
  }
  if (stale) {
    console.error("run `node scripts/compile.mjs` in dao and commit artifacts/");
    process.exit(1);
  }
  console.log(`artifacts up to date (${Object.keys(artifacts).length} contracts, solc ${version})`);
} else {
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(artifacts)) writeFileSync(join(dir, name), text);
  console.log(`wrote ${Object.keys(artifacts).map((n) => `artifacts/${n}`).join(", ")} (solc ${version})`);
}
