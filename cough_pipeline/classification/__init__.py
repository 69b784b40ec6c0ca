"""COVID-19 classification of coughs: preprocessing, feature tables, participant-grouped folds, resampling on
training folds only, feature ranking, classical models and their evaluation with participant-bootstrap intervals."""
