#!/usr/bin/env node
// Writes tests/fixtures/standard-merkle-tree.json: roots and proofs computed by OpenZeppelin's own
// @openzeppelin/merkle-tree (StandardMerkleTree) for participant and round leaves, which the Rust
// tests compare with chain-anchor's trees. Deterministic; rerun after changing a leaf format.
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";
import { keccak256 } from "ethereum-cryptography/keccak.js";
import { utf8ToBytes, bytesToHex } from "ethereum-cryptography/utils.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const byte = (b) => (b & 0xff).toString(16).padStart(2, "0");
const repeat = (b, n) => `0x${byte(b).repeat(n)}`;

const participants = [1, 2, 3, 5, 8].map((n) => {
  const values = Array.from({ length: n }, (_, i) => [repeat(i + 1, 20), repeat(i * 37 + 11, 32)]);
  const tree = StandardMerkleTree.of(values, ["address", "bytes32"]);
  return {
    members: values.map(([address, updateHash]) => ({ address, updateHash })),
    root: tree.root,
    proofs: values.map((_, i) => tree.getProof(i)),
  };
});

const rounds = [1, 4, 7].map((n) => {
  const leaves = Array.from({ length: n }, (_, i) => ({
    round: 10 + i,
    paramsHash: repeat(0x40 + i, 32),
    cid: `bafkreifixture${i}`,
    participantsRoot: repeat(0x90 + i, 32),
    epsilonMicros: 125000 * (i + 1),
  }));
  const values = leaves.map((l) => [
    l.round.toString(),
    l.paramsHash,
    `0x${bytesToHex(keccak256(utf8ToBytes(l.cid)))}`,
    l.participantsRoot,
    l.epsilonMicros.toString(),
  ]);
  const tree = StandardMerkleTree.of(values, ["uint64", "bytes32", "bytes32", "bytes32", "uint64"]);
  return { leaves, root: tree.root, proofs: values.map((_, i) => tree.getProof(i)) };
});

const out = join(root, "tests/fixtures/standard-merkle-tree.json");
writeFileSync(out, `${JSON.stringify({ participants, rounds }, null, 2)}\n`);
console.log(`wrote ${out}`);
