// `--recipe NAME`: a named set of recipe fields under the flags given (cli/_train_args.ts).
import assert from "node:assert/strict";
import { ADAM_DEFAULT_LR, parseTrainArgs, RECIPES, resolveRecipe } from "../cli/_train_args.ts";
import { UsageError } from "../cli/_run.ts";

function given(argv: string[]) {
  const args = parseTrainArgs(argv);
  assert.notEqual(args, "help");
  return (args as Exclude<typeof args, "help">).given;
}

Deno.test("--recipe modern sets AdamW, cosine with warm-up and label smoothing", () => {
  const g = given(["lenet-bn", "--recipe", "modern"]);
  assert.deepEqual(g, { ...RECIPES.modern });
  const { recipe } = resolveRecipe("lenet-bn", {}, g);
  assert.equal(recipe.optimizer, "adamw");
  assert.equal(recipe.schedule, "cosine");
  assert.equal(recipe.labelSmoothing, 0.1);
  assert.equal(recipe.epochs, 10, "what the preset leaves out stays the seed recipe's");
});

Deno.test("flags given override the recipe's values; --recipe seed is the defaults", () => {
  const g = given(["lenet-bn", "--recipe", "modern", "--lr", "0.002", "--batch-size", "64"]);
  assert.equal(g.lr, 0.002);
  assert.equal(g.batchSize, 64);
  assert.equal(g.optimizer, "adamw");
  assert.deepEqual(given(["lenet", "--recipe", "seed"]), {});
});

Deno.test("an unknown --recipe is one usage line naming the choices", () => {
  assert.throws(
    () => parseTrainArgs(["lenet", "--recipe", "fancy"]),
    (e: unknown) =>
      e instanceof UsageError && e.message === "--recipe must be one of seed, modern, got 'fancy'",
  );
});

Deno.test("Adam and AdamW without --lr start from torch.optim's 0.001, not the seed's SGD rate", () => {
  const adam = resolveRecipe("lenet", {}, given(["lenet", "--optimizer", "adam"])).recipe;
  assert.equal(adam.lr, ADAM_DEFAULT_LR);
  const set = resolveRecipe("lenet", {}, given(["lenet", "--optimizer", "adamw", "--lr", "0.003"]));
  assert.equal(set.recipe.lr, 0.003);
  const stored = resolveRecipe("lenet", { optimizer: "adam", lr: 0.0005 }, {}).recipe;
  assert.equal(stored.lr, 0.0005, "a checkpoint's lr is kept");
  assert.equal(resolveRecipe("lenet", {}, {}).recipe.lr, 0.9, "SGD keeps the seed recipe's");
});
