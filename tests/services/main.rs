//! The real services themselves: the broker through rdkafka, and the script that runs them.

mod broker;
mod script;
