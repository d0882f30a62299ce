mod integrations;
mod support;
