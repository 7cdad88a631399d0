"""The site database through an Azure Relay hybrid connection, opened by the app itself
as the sender (App Service's Hybrid Connections are not available to Linux function
apps): a loopback port inside the worker, each connection to it carried over its own
hybrid-connection WebSocket to an on-premises listener that connects to SQL Server."""
