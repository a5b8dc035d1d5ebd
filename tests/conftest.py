pytest_plugins = ["bot.testing.pytest_plugin"]
