"""Platform adapters (cli, telegram, web) and the platform-agnostic jobs client."""
