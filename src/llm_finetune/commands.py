"""``llm-finetune``: experiments as files, over ``kedro run``.

* ``llm-finetune run FILE`` runs an experiment file (Kedro's own run configuration, ``kedro run
  --config FILE``) or, translated first, a LLaMA-Factory training YAML;
* ``llm-finetune translate FILE`` prints (or writes) the experiment file a LLaMA-Factory YAML becomes;
* ``llm-finetune rerun RUN_ID`` runs a finished MLflow run again from its record and says whether it
  reproduced; ``llm-finetune compare A B`` prints two runs' differences.
* ``llm-finetune chat`` talks to the base model, an adapter (``--adapter latest``) or a merged folder,
  streaming, in the training template (:mod:`llm_finetune.serving.chat`).

Thin on purpose: an experiment runs through Kedro's own ``run`` command, so ``kedro run --config``
and ``llm-finetune run`` are the same run; this module only adds what Kedro does not have. click is
Kedro's own CLI library. (Not ``cli.py``: Kedro would load a ``cli`` group there as its project
commands and replace ``kedro run``.)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click
import yaml

PACKAGE = "llm_finetune"


def _project() -> Path:
    """The Kedro project holding the current directory, bootstrapped (settings, pipelines, logging)."""
    from kedro.framework.startup import bootstrap_project
    from kedro.utils import find_kedro_project

    root = find_kedro_project(Path.cwd())
    if root is None:
        raise click.ClickException(f"{Path.cwd()} is not inside a Kedro project (no pyproject.toml with "
                                   "[tool.kedro]): run llm-finetune from the project folder")
    bootstrap_project(root)
    return root


def _kedro_run(args: list[str]) -> None:
    from kedro.framework.cli.utils import find_run_command

    find_run_command(PACKAGE).main(args=args, prog_name="run", standalone_mode=False)  # the `run:` section


def _split_cli_params(kedro_args: tuple[str, ...]) -> tuple[dict, list[str]]:
    """``--params`` taken out of the arguments for ``kedro run``, parsed as Kedro parses them.

    Given to ``kedro run --config`` as they are, they would replace the file's ``params`` whole (click lets
    a command-line option win over its config-file default), so they are merged into the file's instead.
    """
    from kedro.framework.cli.utils import _split_params

    from llm_finetune.experiments.rerun import merged

    params, rest, args = {}, [], list(kedro_args)
    while args:
        arg = args.pop(0)
        if arg == "--params" and args:
            params = merged(params, _split_params(None, None, args.pop(0)))
        elif arg.startswith("--params="):
            params = merged(params, _split_params(None, None, arg.split("=", 1)[1]))
        else:
            rest.append(arg)
    return params, rest


def _run_experiment(experiment: dict, name: str, kedro_args: tuple[str, ...]) -> None:
    """``kedro run --config`` on ``experiment`` with the command line's ``--params`` merged into its own."""
    from llm_finetune.experiments.rerun import merged

    params, rest = _split_cli_params(kedro_args)
    section = dict(experiment.get("run") or {})
    section["params"] = merged(section.get("params") or {}, params)
    with tempfile.TemporaryDirectory(prefix="llm-finetune-experiment-") as folder:
        path = Path(folder) / f"{name}.yml"
        path.write_text(yaml.safe_dump({**experiment, "run": section}, sort_keys=False))
        _kedro_run(["--config", str(path), *rest])


def _is_llamafactory(path: Path, data: dict, source: str) -> bool:
    if source != "auto":
        return source == "llamafactory"
    if "run" in data:
        return False
    if {"stage", "model_name_or_path"} & set(data):
        return True
    raise click.ClickException(f"{path}: neither an experiment file (a `run:` section) nor a LLaMA-Factory "
                               "training YAML (`stage`, `model_name_or_path`); say which with --from")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise click.ClickException(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _translate(path: Path, data: dict, root: Path):
    from kedro.framework.session import KedroSession

    from llm_finetune.experiments.llamafactory import TranslationError, translate

    with KedroSession.create(root) as session:
        registry = session.load_context().params.get("model_registry") or {}
    try:
        return translate(data, source=path, project_path=root, model_registry=registry)
    except TranslationError as error:
        raise click.ClickException(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Fine-tuning experiments as files: run, translate, rerun and compare."""


@main.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "source", type=click.Choice(["auto", "experiment", "llamafactory"]), default="auto",
              show_default=True, help="what FILE is (auto: a `run:` section is an experiment file)")
@click.option("--dry-run", is_flag=True, help="print the experiment and stop")
@click.argument("kedro_args", nargs=-1, type=click.UNPROCESSED)
def run(file: Path, source: str, dry_run: bool, kedro_args: tuple[str, ...]) -> None:
    """Run an experiment file or a LLaMA-Factory YAML. Further options go to `kedro run` (--env, ...) and win
    over the file's; --params are merged into the file's parameters."""
    root = _project()
    data = _read_yaml(file)
    if not _is_llamafactory(file, data, source):
        if dry_run:
            click.echo(yaml.safe_dump(data, sort_keys=False))
            return
        _run_experiment(data, file.stem, kedro_args)
        return
    translation = _translate(file, data, root)
    click.echo(translation.render())
    if not dry_run:
        _run_experiment(translation.experiment(), file.stem, kedro_args)


@main.command("translate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="write the experiment file here (it is printed either way)")
def translate_command(file: Path, output: Path | None) -> None:
    """Print the experiment file a LLaMA-Factory training YAML becomes, with what each key mapped to."""
    root = _project()
    translation = _translate(file, _read_yaml(file), root)
    click.echo(translation.render())
    if output:
        if output.exists():
            raise click.ClickException(f"{output} exists; it is left as it is (choose another name)")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(translation.experiment_yaml())
        click.echo(f"wrote {output}")


def _tracking(root: Path, env: str | None):
    """An MLflow client on the project's tracking store (``conf/<env>/mlflow.yml``, via kedro-mlflow)."""
    import mlflow
    from kedro.framework.session import KedroSession

    with KedroSession.create(root, env=env) as session:
        session.load_context()  # kedro-mlflow sets the tracking URI from mlflow.yml here
    return mlflow.tracking.MlflowClient()


@main.command("rerun")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="run even where a data file changed since the original run")
@click.option("--dry-run", is_flag=True, help="print what the rerun would pass to Kedro and stop")
def rerun(run_id: str, force: bool, dry_run: bool) -> None:
    """Run a finished MLflow run again: its parameters, data versions, node selection; then compare."""
    import mlflow
    from kedro.framework.session import KedroSession

    from llm_finetune.experiments.record import REPRODUCES_ENV, SELECTION_KEYS
    from llm_finetune.experiments.rerun import RerunError, check_base_model, compare, merged, plan_rerun, read_record

    root = _project()
    client = _tracking(root, None)
    try:
        record = read_record(client, run_id)
    except RerunError as error:
        raise click.ClickException(str(error)) from None
    env = record.get("env")
    with KedroSession.create(root, env=env, runtime_params=record.get("runtime_params") or {}) as session:
        current = session.load_context().params
    plan = plan_rerun(record, current, root)
    check_base_model(record, merged(current, plan.runtime_params), plan)
    for line in plan.warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(yaml.safe_dump({"pipelines": record["pipeline_names"], "env": env,
                               "runtime_params": plan.runtime_params, "load_versions": plan.load_versions,
                               **{k: v for k, v in record.get("selection", {}).items() if k in SELECTION_KEYS}},
                              sort_keys=False))
    if plan.refusals and not force:
        raise click.ClickException("cannot rerun exactly: " + "; ".join(plan.refusals) + " (--force runs anyway)")
    if dry_run:
        return
    os.environ[REPRODUCES_ENV] = run_id
    try:
        with KedroSession.create(root, env=env, runtime_params=plan.runtime_params) as session:
            session.run(pipeline_names=record["pipeline_names"], load_versions=plan.load_versions or None,
                        **record.get("selection", {}))
    finally:
        os.environ.pop(REPRODUCES_ENV, None)
    new_run = mlflow.last_active_run()
    comparison = compare(client, run_id, new_run.info.run_id)
    click.echo(comparison.render())
    if not comparison.reproduced:
        sys.exit(1)


@main.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--env", default=None, help="the environment whose mlflow.yml names the tracking store")
def compare_command(run_a: str, run_b: str, env: str | None) -> None:
    """Print the parameter, metric, weight and context differences of two MLflow runs."""
    from llm_finetune.experiments.rerun import compare

    client = _tracking(_project(), env)
    click.echo(compare(client, run_a, run_b).render())



@main.command("chat")
@click.option("--adapter", default=None, help="an adapter folder, or `latest` (the newest of --stage)")
@click.option("--stage", default="sft", show_default=True, help="whose adapter `--adapter latest` takes")
@click.option("--model", "model_folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="a transformers folder (a merged export); default: the adapter's base, else the project's base")
@click.option("--gguf", default=None, help="a GGUF export folder or .gguf file, or `latest`: served by llama.cpp")
@click.option("--template", default=None, help="for a folder without prompt_template.json (default: the tokenizer's)")
@click.option("--system", default=None, help="a system prompt for the conversation")
@click.option("--max-new-tokens", default=256, show_default=True, type=click.IntRange(1))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0), help="0: greedy")
@click.option("--seed", default=123, show_default=True, type=int)
def chat_command(adapter: str | None, stage: str, model_folder: Path | None, gguf: str | None, template: str | None,
                 system: str | None, max_new_tokens: int, temperature: float, seed: int) -> None:
    """Chat with a model: replies stream as they are generated; `/reset` starts over, `/exit` (or EOF) ends."""
    from kedro.utils import find_kedro_project
    from transformers import TextStreamer

    from llm_finetune.evaluation.generation import Decoding
    from llm_finetune.serving.chat import MODELS, ChatModel, Conversation, latest_folder, latest_gguf

    models = (find_kedro_project(Path.cwd()) or Path.cwd()) / MODELS
    try:
        folder = latest_folder(stage, models) if adapter == "latest" else (Path(adapter) if adapter else None)
        decoding = Decoding(max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature or 1.0,
                            seed=seed)
        if gguf:
            chat = ChatModel.load_gguf(latest_gguf(models) if gguf == "latest" else Path(gguf), decoding)
        else:
            chat = ChatModel.load(model=model_folder, adapter=folder, template=template, decoding=decoding,
                                  models=models)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Chatting with {chat.source}; /reset starts over, /exit ends.", err=True)
    conversation = Conversation(system=system)
    streamer = TextStreamer(chat.tokenizer, skip_prompt=True, skip_special_tokens=True)
    with chat.resources:
        while True:
            try:
                message = input("> " if sys.stdin.isatty() else "")
            except EOFError:
                break
            command = message.strip()
            if command in ("/exit", "/quit"):
                break
            if command == "/reset":
                conversation.reset()
                click.echo("(conversation reset)", err=True)
            elif command:
                conversation.reply(message, chat, streamer)


if __name__ == "__main__":
    main()
