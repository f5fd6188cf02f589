#!/usr/bin/env node
// Writes tests/fixtures/reward-tree.json: roots and proofs computed by OpenZeppelin's own
// @openzeppelin/merkle-tree (StandardMerkleTree) over reward leaves (uint256 index, address
// account, uint256 amount), indices numbering the accounts in address order, which the Rust tests
// compare with dao::RewardTree. Uses chain-anchor's node_modules (`npm ci` there). Deterministic.
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(join(root, "..", "chain-anchor", "package.json"));
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

const byte = (b) => (b & 0xff).toString(16).padStart(2, "0");
const cases = [1, 2, 3, 5, 9].map((n) => {
  // Addresses listed out of order; amounts up to 10^27 (the whole supply in base units).
  const rewards = Array.from({ length: n }, (_, i) => [
    `0x${byte(0xf0 - i * 13).repeat(20)}`,
    (10n ** BigInt(18 + (i % 10)) + BigInt(i * 7919)).toString(),
  ]);
  const sorted = [...rewards].sort((a, b) => (a[0].toLowerCase() < b[0].toLowerCase() ? -1 : 1));
  const values = sorted.map(([account, amount], i) => [i.toString(), account, amount]);
  const tree = StandardMerkleTree.of(values, ["uint256", "address", "uint256"]);
  return {
    rewards: rewards.map(([account, amount]) => ({ account, amount })),
    root: tree.root,
    claims: values.map(([index, account, amount], i) => ({ index: Number(index), account, amount, proof: tree.getProof(i) })),
  };
});
writeFileSync(join(root, "tests", "fixtures", "reward-tree.json"), `${JSON.stringify({ cases }, null, 2)}\n`);
console.log(`wrote tests/fixtures/reward-tree.json (${cases.length} cases)`);
