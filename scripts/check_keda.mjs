// Validates KEDA objects (a JSON array of them, argv[2]) against KEDA's CRD
// schemas, as compiled by @kubernetes-models/keda (installed by
// scripts/install-deps under $MOUTHMAP_DEPLOY_NODE). Prints one line per
// object; exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const root = `${process.env.MOUTHMAP_DEPLOY_NODE}/node_modules/@kubernetes-models/keda`;
const { ScaledObject } = await import(pathToFileURL(`${root}/keda.sh/v1alpha1/ScaledObject.js`));
const models = { ScaledObject };
let bad = 0;
for (const o of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const Model = models[o.kind];
  const name = `${o.kind} ${o.metadata?.name}`;
  if (!Model) {
    console.log(`${name}: no KEDA schema for this kind`);
    bad++;
    continue;
  }
  try {
    new Model(o).validate();
    console.log(`${name}: valid`);
  } catch (e) {
    console.log(`${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
