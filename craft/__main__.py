"""``python -m craft`` (and the ``craft`` command): the CLI, under tcmalloc where it is installed."""


def run() -> None:
    from craft.allocator import reexec_with_allocator

    reexec_with_allocator()  # before torch is imported: an allocator is only taken at process start
    from craft.cli import main

    main()


if __name__ == "__main__":
    run()
