#!/usr/bin/env node
// Compiles dao/contracts/*.sol with the pinned solc-js and OpenZeppelin and writes
// artifacts/<Contract>.json (abi, bytecode, deployedBytecode, compiler settings).
//
// Test-only contracts (hostile tokens, reentrancy attackers) live in contracts/test/*.sol and are
// compiled separately, with the same settings, into tests/artifacts/<Contract>.json: they never
// enter artifacts/, so the library's bindings and `deploy` cannot see them, and the deployed
// contracts' bytes do not depend on them. They may import the DAO's contracts ("../Staking.sol").
//
// The DAO contracts have no package.json of their own: they use chain-anchor's node_modules
// (`npm ci` in chain-anchor), so one package-lock.json pins solc, OpenZeppelin and anvil for both
// crates and the two can never drift apart.
//
//   node scripts/compile.mjs          write the artifacts (both sets)
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

function readSources(dir) {
  const sources = {};
  for (const name of readdirSync(join(root, dir)).sort()) {
    if (name.endsWith(".sol")) {
      sources[`${dir}/${name}`] = { content: readFileSync(join(root, dir, name), "utf8") };
    }
  }
  return sources;
}

function findImports(path) {
  // A test contract's import of a DAO contract ("../Staking.sol" from contracts/test/).
  if (path.startsWith("contracts/") && !path.includes("..") && existsSync(join(root, path))) {
    return { contents: readFileSync(join(root, path), "utf8") };
  }
  const file = join(modules, path);
  if (!path.startsWith("@openzeppelin/contracts/") || !existsSync(file)) {
    return { error: `import ${path} not found (only @openzeppelin/contracts is available; run \`npm ci\`)` };
  }
  return { contents: readFileSync(file, "utf8") };
}

/// Compiles the .sol files directly in `dir` and returns { "<Contract>.json": text } for the
/// contracts defined there (not for what they import).
function compile(dir) {
  const input = { language: "Solidity", sources: readSources(dir), settings };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const e of output.errors ?? []) {
    // solc warns at every `tstore`; OpenZeppelin's ReentrancyGuardTransient (its only use here)
    // clears its slot at the end of each guarded call, the case the warning itself calls safe.
    const transientGuard =
      e.severity === "warning" && e.sourceLocation?.file === "@openzeppelin/contracts/utils/TransientSlot.sol"
      && e.message.startsWith("Transient storage as defined by EIP-1153");
    if (!transientGuard) console.error(e.formattedMessage);
  }
  if (errors.length > 0) process.exit(1);

  const artifacts = {};
  for (const [sourceName, contracts] of Object.entries(output.contracts)) {
    if (!(sourceName in input.sources)) continue;
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
  return artifacts;
}

const sets = [
  { sources: "contracts", out: "artifacts" },
  { sources: "contracts/test", out: "tests/artifacts" },
];
let stale = false;
for (const set of sets) {
  const artifacts = compile(set.sources);
  const dir = join(root, set.out);
  if (check) {
    const committed = existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith(".json")) : [];
    for (const name of new Set([...committed, ...Object.keys(artifacts)])) {
      const path = join(dir, name);
      const have = existsSync(path) ? readFileSync(path, "utf8") : null;
      if (have !== artifacts[name]) {
        console.error(`${set.out}/${name} differs from what ${set.sources}/ compiles to`);
        stale = true;
      }
    }
    if (!stale) {
      console.log(`${set.out} up to date (${Object.keys(artifacts).length} contracts, solc ${version})`);
    }
  } else {
    mkdirSync(dir, { recursive: true });
    for (const [name, text] of Object.entries(artifacts)) writeFileSync(join(dir, name), text);
    console.log(`wrote ${Object.keys(artifacts).map((n) => `${set.out}/${n}`).join(", ")} (solc ${version})`);
  }
}
if (stale) {
  console.error("run `node scripts/compile.mjs` in dao and commit artifacts/ and tests/artifacts/");
  process.exit(1);
}
